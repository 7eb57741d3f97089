"""What the tests share, as plain modules (fixtures live in ``tests/conftest.py``): the tiny model, throwaway
projects, registry helpers and a real server, the team stack of local processes, the bad-input corpus."""
