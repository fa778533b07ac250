"""How state-store keys are composed: parts joined by ``SEP``, a NUL.

The agents of one worker share stores (score reads memorize's ``content`` and
``memories`` stores), so every agent composes keys the same way, ``tenant SEP id``. A
tenant name cannot hold a NUL (``streams.common.validation.TENANT_RULE``), so a scan by
the prefix ``tenant SEP`` finds that tenant's keys and no other's.
"""

from __future__ import annotations

SEP = "\x00"
