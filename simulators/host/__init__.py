"""The reference central host: every endpoint of host-api.md, for the demo, tests and technicians.

It is a simulator of the provider's system, not the provider's system: the box must depend on
nothing it does beyond host-api.md. Policies are signed with the public TEST key of `keys.py`.

- `routes` (the Flask app, authentication, enroll/rewards/transactions), `device_routes`
  (config, heartbeat, commands, logs, token), `knobs` (TEST-ONLY `/_sim/` endpoints: no
  authentication, not part of the contract);
- `checks` (is a body what the contract allows), `rules` (rewards, events, configs),
  `policy` (the served policy template), `store` (SQLite state), `keys` (the TEST key);
- `runner` (serve on a thread or in the foreground), `cli` (`connectbox host-sim`).
"""
