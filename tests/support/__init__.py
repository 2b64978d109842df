"""Helpers shared by the tests and the benchmarks (`from tests.support.<module> import ...`;
benchmarks run as `python -m bench.<name>` from the repository root).

- `files`: safetensors bytes (checkpoints, data shards) built in memory
- `digits`: the demo's digits source trajectory on disk and transfer specs over it
- `engine_setups`: trained digits MLP/CNN setups for engine tests
- `jobs`: uploads and jobs through the API's own functions
- `rows`: job rows written directly (claim and recovery tests), and their events
- `http`: uploads and specs through a TestClient
- `postgres`: scratch PostgreSQL databases
- `services`, `live_server`, `receiver`: Redis, Celery worker, API processes, webhook receiver
  (free ports from `trajx.demo.server.free_port`)
"""
