"""The SQLite ledger's writer: typed operations (`jobs`), the group-commit engine on one thread
(`engine`), the statements it runs (`store`), and the same writer in a process of its own
(`process`: the parent's side, supervised; `child`: the process; `wire`: what crosses, pickled).
See ``ledger/README.md``. Nothing is re-exported here: importing one module imports only what
it needs."""
