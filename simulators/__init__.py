"""Simulators: a POS that speaks the loyalty interface (`pos`), the reference central host
(`host`), virtual card readers (`readers`) and the demo that plays them together (`demo`).

Real code used by the demo, the tests and technicians, in a distribution of its own
(`connectbox-simulators`, `simulators/pyproject.toml`) that the development installs add and
the production image leaves out. It may import `app/` and `drivers/`; nothing there imports it.
"""
