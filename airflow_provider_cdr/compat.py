"""The Airflow names the provider imports that the supported releases (3.1.3 to 3.3) keep apart.

Airflow 3.2's Task SDK took them in; 3.1 keeps them in the core, where 3.2+ deprecates them. So
the SDK is tried first, then the place 3.1 has them:

- ``conf``: ``airflow.sdk`` from 3.2; ``airflow.configuration`` in 3.1.
- ``AirflowFailException``, ``AirflowSkipException``, ``AirflowNotFoundException``:
  ``airflow.sdk.exceptions`` from 3.2; ``airflow.exceptions`` in 3.1, the classes its task runner
  and ``BaseHook.get_connection`` use.

Everything else the provider takes from Airflow is where it is on every supported release.
"""

from __future__ import annotations

try:
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef,attr-defined,assignment]

try:
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,assignment]
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
    )

__all__ = ["AirflowFailException", "AirflowNotFoundException", "AirflowSkipException", "conf"]
