-- Take a partition's lease if it is free, and bump its fencing epoch in the same step, so the
-- previous owner's commits are refused from this moment on.
-- KEYS: 1 lease, 2 epoch. ARGV: 1 token, 2 ttl ms. Returns the new epoch, or false if taken.
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
