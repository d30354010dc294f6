"""The Workload API as the SPIFFE spec spells it, written out independently of ``spiffe_bridge._wire``.

Raw-gRPC tests send this header themselves, so a wrong constant in the library fails them.
"""

from __future__ import annotations

#: The security header every Workload API request must carry (metadata for a raw gRPC call).
HEADER = (("workload.spiffe.io", "true"),)
