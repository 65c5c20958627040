"""Domain logic: functions over a Session that never commit (the caller owns the unit of work).

Importing the package registers the outbox (``services.outbox``): every job state
change committed through a session writes its event and webhook deliveries.
"""

from . import outbox as outbox
