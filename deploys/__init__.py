"""The deploys: each role's folder composes its services (see design.md §6)."""

from oceanid import op_order

op_order.install()  # pyinfra's operation order without reading source files (see there)
