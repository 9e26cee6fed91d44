-- Extend a lease to a full TTL (replace, never add), only for its holder at its epoch.
-- KEYS: 1 lease, 2 epoch. ARGV: 1 token, 2 epoch, 3 ttl ms. Returns 1, or 0 if lost.
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
