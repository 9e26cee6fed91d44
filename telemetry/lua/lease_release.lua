-- Give a lease up at once (compare and delete), so the next owner need not wait for the TTL.
-- KEYS: 1 lease. ARGV: 1 token. Returns 1 if it was held, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
