"""The barrier: a service's own writes happen once per saga step, never after the
step's compensation, and a compensation of a step that never took effect does nothing.

Wrap a step's activity's database work, and its compensation's, in :func:`guarded`,
inside the service's own transaction::

    @activity.defn
    def book_room(request: RoomRequest) -> str:
        conn = sqlite3.connect(DB, timeout=30)
        try:
            with conn:  # one transaction: the barrier's record commits with the booking
                return guarded(conn, lambda: insert_booking(conn, request))
        finally:
            conn.close()

In an async activity on PostgreSQL (``psycopg.AsyncConnection``), ``guarded_async``.
The connection is ``sqlite3``'s (nothing to install) or psycopg's (the ``barrier``
extra). Create the table once (:func:`create_table`, or the statements
docs/barrier.md shows);
:func:`prune` deletes records older than the namespace's retention. See
docs/barrier.md for the three hazards, the rules and the table.
"""

from .._errors import CompensatedFirst
from ._barrier import create_table, guarded, guarded_async, prune

__all__ = ["CompensatedFirst", "create_table", "guarded", "guarded_async", "prune"]
