"""Client work: the NumPyClient, its mixins, and the query handlers methods register.

Importing the package imports every module in it, so a method's client module registers
its handlers (``clients.handlers.query_handler``) by being here.
"""

import pkgutil
from importlib import import_module

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
