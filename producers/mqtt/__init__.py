"""The MQTT edge: real devices in. A broker's messages become readings in the pipeline's streams,
each acknowledged to the broker only once its reading (or its dead letter) is in Redis.

`formats/` turns one message into readings (pure functions, tested on real payloads);
`bridge.py` moves messages from the broker to Redis and acknowledges them; `sink.py` is the
write that makes a redelivered message harmless.
"""
