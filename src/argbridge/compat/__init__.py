"""Uses of other libraries beyond their documented API, one module each, each kept only
for a measured win and guarded by a contract test in ``tests/compat/`` that fails loudly
when the library changes."""
