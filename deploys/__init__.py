"""The deploys: each role's folder composes its services (see design.md §6)."""

from oceanid import pyinfra_internals

# pyinfra's operation order without reading source files (see oceanid/pyinfra_internals.py)
pyinfra_internals.install_op_order()
