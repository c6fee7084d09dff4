"""CDRToParquetOperator: one account-local day of CDRs into one Hive partition, atomically."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.definitions._internal.mixins import ResolveMixin

from airflow_provider_cdr.api import availability
from airflow_provider_cdr.api.availability import as_timedelta
from airflow_provider_cdr.api.endpoints import RECORDS_PATH
from airflow_provider_cdr.api.errors import CDRConfigError, CDRSearchTokenExpired
from airflow_provider_cdr.api.extraction import Extraction
from airflow_provider_cdr.api.paging import MAX_PER_PAGE
from airflow_provider_cdr.api.query import CDRQuery, time_zone
from airflow_provider_cdr.compat import AirflowFailException
from airflow_provider_cdr.convert.formats import CDRBatches
from airflow_provider_cdr.convert.records import RecordConverter
from airflow_provider_cdr.days.day_window import DayWindow
from airflow_provider_cdr.days.zone_check import CDRTimeZoneMismatch, ZoneCheck
from airflow_provider_cdr.hooks.cdr import CDRHook
from airflow_provider_cdr.landing.delta_store import TABLE_FORMATS, check_delta_location, require_deltalake
from airflow_provider_cdr.landing.memory import system_arrow_pool
from airflow_provider_cdr.landing.writer import DayPartitionWriter, PartitionSummary
from airflow_provider_cdr.tasks.arguments import (
    check_filters,
    day_from_context,
    is_templated,
    parse_day,
)
from airflow_provider_cdr.tasks.output import asset_uri, check_output_path, open_base

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

# Past this share of records outside the day, the time zone is probably wrong.
MAX_OUT_OF_DAY_SHARE = 0.01
DEFAULT_SLICES = 8
COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")


class CDRToParquetOperator(BaseOperator):
    """
    Land one day of Call Detail Records as a Hive partition ``{output_path}/date=YYYY-MM-DD/``.

    The day is a calendar day in the account's time zone (23 or 25 hours on DST days). A rerun
    replaces the day atomically; records are written as they arrive, so memory does not grow
    with the day.

    :param cdr_conn_id: connection of type ``cdr``. (templated)
    :param output_path: local directory or object-storage URL (``s3://bucket/cdr``), or an
        ``ObjectStoragePath`` (which may name its connection), or an XComArg. (templated)
    :param output_conn_id: connection for object storage (e.g. an ``aws`` connection). (templated)
    :param day: the day to land, ``YYYY-MM-DD``; default: the day the run covers, see
        :func:`day_from_context`. (templated)
    :param timezone: IANA name; default: the connection's ``timezone`` extra. (templated)
    :param filters: any documented filter except the date window. (templated)
    :param slices: how many time slices of the day are fetched concurrently.
    :param concurrency: requests in flight at once; default: the connection's ``concurrency``.
    :param per_page: records asked per request; default: the connection's ``per_page`` (10000).
    :param settle_period: how long after its end a day's records are trusted to be in (timedelta or
        seconds; default 0). A day is landed only once it has ended and settled.
    :param allow_partial: land a day that has not ended (and settled) yet; its manifest then says
        ``"complete": false``, so the example backfill DAG does not count it as landed.
    :param max_out_of_day_share: the share of records the API returns for the day that may lie
        outside it before the task fails for a wrong time zone (default 1 %).
    :param check_offsets: fail when records carry a UTC offset the time zone does not have at their
        instant (default); turn off only for an API that stamps records in another zone than the
        account's.
    :param asset_partition_key: also give each Asset event the day as its ``partition_key`` (Airflow
        versions whose outlet events have ``add_partitions``; elsewhere ignored). Off by default:
        Airflow then queues only partition-aware DAGs on the event, not DAGs plainly scheduled on
        the Asset.
    :param table_format: ``"parquet"`` (default): the Hive partition above, with its ``_manifest.json``;
        ``"delta"``: the day as the partition ``date=D`` of a Delta Lake table at ``output_path``
        (local disk or S3; needs the ``delta`` extra), replaced by one Delta commit whose metadata
        holds the manifest (``cdr.manifest``). See the README's "Table formats".

    **Assets.** When ``output_path`` is known when the DAG is parsed (a plain str or an
    ``ObjectStoragePath``), the task's outlet is ``Asset(asset_uri(output_path))`` (``file:///abs/path``
    or the storage URL, without a connection id) and each landing emits an event on it whose
    ``extra`` holds ``day``, ``rows``, ``files`` and ``bytes``. A templated or XCom ``output_path`` is
    only known at run time, so no Asset can be declared for it: pass ``outlets=[Asset("<uri>")]``
    yourself, or ``outlets=[AssetAlias("<name>")]`` to have each run attach the Asset of the path it
    landed in; without either, the task logs a warning naming the URI to declare.
    """

    template_fields: Sequence[str] = (
        "cdr_conn_id",
        "output_path",
        "output_conn_id",
        "day",
        "timezone",
        "filters",
    )
    ui_color = "#d9ecf7"

    def __init__(
        self,
        *,
        output_path: str | ObjectStoragePath | ResolveMixin,
        cdr_conn_id: str = CDRHook.default_conn_name,
        output_conn_id: str | None = None,
        day: str | date | None = None,
        timezone: str | None = None,
        filters: dict[str, Any] | None = None,
        slices: int = DEFAULT_SLICES,
        concurrency: int | None = None,
        per_page: int | None = None,
        compression: str = "zstd",
        row_group_rows: int = 65_536,
        file_rows: int = 1_000_000,
        max_restarts: int = 2,
        settle_period: timedelta | float = timedelta(0),
        allow_partial: bool = False,
        max_out_of_day_share: float = MAX_OUT_OF_DAY_SHARE,
        check_offsets: bool = True,
        asset_partition_key: bool = False,
        table_format: str = "parquet",
        **kwargs: Any,
    ) -> None:
        # Known when the DAG is parsed (not an XComArg, not a template): checked, and its Asset declared.
        location = None if isinstance(output_path, ResolveMixin) else check_output_path(output_path)
        if timezone is not None and not is_templated(timezone):
            time_zone(timezone)
        if not is_templated(filters):
            check_filters(filters)
        if day is not None and not is_templated(day):
            parse_day(day)
        _check_sizes(
            slices=slices,
            concurrency=concurrency,
            per_page=per_page,
            row_group_rows=row_group_rows,
            file_rows=file_rows,
            max_restarts=max_restarts,
        )
        if compression not in COMPRESSIONS:
            raise CDRConfigError(f"compression={compression!r} is not one of {', '.join(COMPRESSIONS)}")
        if table_format not in TABLE_FORMATS:
            raise CDRConfigError(f"table_format={table_format!r} is not one of {', '.join(TABLE_FORMATS)}")
        if table_format == "delta":
            require_deltalake()
            if location is not None and not is_templated(location):
                check_delta_location(location)
        if not 0 <= max_out_of_day_share < 1:
            raise CDRConfigError(f"max_out_of_day_share={max_out_of_day_share} must be in [0, 1)")
        if location is not None and not is_templated(location) and "outlets" not in kwargs:
            kwargs["outlets"] = [Asset(asset_uri(location))]
        super().__init__(**kwargs)
        self.cdr_conn_id = cdr_conn_id
        self.output_path = output_path if location is None else location
        self.output_conn_id = output_conn_id
        self.day = day
        self.timezone = timezone
        self.filters = filters
        self.slices = slices
        self.concurrency = concurrency
        self.per_page = per_page
        self.compression = compression
        self.row_group_rows = row_group_rows
        self.file_rows = file_rows
        self.max_restarts = max_restarts
        self.settle_period = as_timedelta(settle_period, "settle_period")
        self.allow_partial = allow_partial
        self.max_out_of_day_share = max_out_of_day_share
        self.check_offsets = check_offsets
        self.asset_partition_key = asset_partition_key
        self.table_format = table_format

    def execute(self, context: Context) -> dict[str, Any]:
        hook = CDRHook(cdr_conn_id=self.cdr_conn_id)
        tz = time_zone(self.timezone or hook.timezone)
        query = check_filters(self.filters, tz.key)
        day = parse_day(self.day) if self.day else day_from_context(context, tz)
        window = DayWindow(day, tz)
        complete = self._day_is_over(window)
        output = check_output_path(self.output_path)  # as rendered, or resolved from XCom
        base = open_base(output, self.output_conn_id)
        self.log.info("Landing CDRs of %s (%s, %.0f h) into %s", day, tz.key, window.hours, output)
        for attempt in range(self.max_restarts + 1):
            try:
                with system_arrow_pool():  # see memory.py
                    summary, facts = self._land(hook, query, window, base, context, complete)
                break
            except CDRSearchTokenExpired:
                if attempt == self.max_restarts:
                    raise
                self.log.warning("A search token expired; restarting the day from scratch (nothing was kept)")
            except CDRTimeZoneMismatch as err:
                raise AirflowFailException(str(err)) from None  # retrying asks for the same wrong hours
        result = {
            "day": day.isoformat(),
            "location": summary.location,
            "rows": summary.rows,
            "files": len(summary.files),
            "bytes": summary.bytes,
            "out_of_day": facts["out_of_day"],
            "complete": complete,
        }
        table_uri = asset_uri(output)
        self._emit_asset_event(context, result, table_uri)
        self._lineage: tuple[str, str, dict[str, Any]] = (hook.base_url, table_uri, result)
        return result

    def _day_is_over(self, window: DayWindow) -> bool:
        """Whether the day has ended and settled; if not, only `allow_partial` lands it (as incomplete)."""
        settled_at = window.end + self.settle_period
        if availability.utcnow() >= settled_at:
            return True
        if not self.allow_partial:
            raise AirflowFailException(
                f"{window.day} in {window.tz.key} has not ended and settled yet (it ends at "
                f"{window.end.isoformat()}, plus a settle period of {self.settle_period}): landing it now "
                "would store part of the day as if it were whole. Land it after "
                f"{settled_at.isoformat()}, or pass allow_partial=True to land what there is so far "
                '(its manifest then says "complete": false).'
            )
        self.log.warning("%s has not ended and settled yet: landing it as incomplete", window.day)
        return False

    def _land(
        self,
        hook: CDRHook,
        query: CDRQuery,
        window: DayWindow,
        base: Any,
        context: Context,
        complete: bool,
    ) -> tuple[PartitionSummary, dict[str, Any]]:
        """One complete attempt: fetch every slice, write as it arrives, commit or leave no trace."""
        batches = CDRBatches()  # one for the day: its counters go into the manifest
        slices = [query.with_window(**bounds) for bounds in window.slices(self.slices)]
        extraction = hook.extraction(
            batches, per_page=self.per_page, concurrency=self.concurrency or hook.settings.concurrency
        )
        run_id = uuid_lib.uuid4().hex[:12]
        zone_check = ZoneCheck(window, self.check_offsets)
        with DayPartitionWriter(
            base,
            window.day,
            compression=self.compression,
            row_group_rows=self.row_group_rows,
            file_rows=self.file_rows,
            run_id=run_id,
            table_format=self.table_format,
        ) as writer:
            # While the slices wait on the API, the writer encodes what it holds (see flush_idle).
            for batch in extraction.run([s.as_params() for s in slices], idle=writer.flush_idle):
                writer.write_batch(zone_check.keep(batch))
            problem = zone_check.problem(self.max_out_of_day_share)
            if problem:
                raise CDRTimeZoneMismatch(problem)  # before the commit: the previous version stays
            facts = self._facts(extraction, batches.converter, zone_check.out_of_day, query, window, context)
            summary = writer.commit(manifest=facts, complete=complete)
        return summary, facts

    def _facts(
        self,
        extraction: Extraction[Any],
        converter: RecordConverter,
        out_of_day: int,
        query: CDRQuery,
        window: DayWindow,
        context: Context,
    ) -> dict[str, Any]:
        """What the manifest says about this extraction; the query is stored without the key."""
        ti = context.get("ti")
        stats, paging, values = extraction.stats, extraction.paging, converter.counts()
        return {
            "endpoint": RECORDS_PATH,
            "query": query.as_params(),
            "timezone": window.tz.key,
            "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
            "slices": self.slices,
            "requests": stats.requests,
            "retries": stats.retries,
            "paging": paging.summary(),
            "duplicates_dropped": stats.duplicates,
            "out_of_day": out_of_day,
            "coerced_values": values["coerced"],
            "uncoercible_values": values["uncoercible"],
            "unknown_fields": values["unknown_fields"],
            "coerced_by_field": values["coerced_by_field"],
            "uncoercible_by_field": values["uncoercible_by_field"],
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(ti, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
        }

    def _emit_asset_event(self, context: Context, result: dict[str, Any], uri: str) -> None:
        """The landed day on the task's Assets (and, through an AssetAlias, on the Asset at `uri`)."""
        extra = {key: result[key] for key in ("day", "rows", "files", "bytes")}
        declared = [outlet for outlet in self.outlets if isinstance(outlet, (Asset, AssetAlias))]
        if not declared:
            self.log.warning(
                "No Asset event for %s: output_path was not known when the DAG was parsed (templated or "
                "from XCom), so no Asset was declared for it. To schedule DAGs on this data, declare "
                "outlets=[Asset(%r)] on this task, or outlets=[AssetAlias('<name>')] if the path changes "
                "from run to run.",
                uri,
                uri,
            )
        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        for outlet in declared:
            if isinstance(outlet, AssetAlias):
                outlet_events[outlet].add(Asset(uri), extra=extra)
                continue
            accessor = outlet_events[outlet]
            accessor.extra = extra
            add_partitions = getattr(accessor, "add_partitions", None)  # Airflow with partitioned assets
            if self.asset_partition_key and add_partitions is not None:
                add_partitions(result["day"])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input: the API endpoint (no key); output: the table, the day as its partition (tasks/lineage)."""
        from airflow_provider_cdr.tasks.lineage import operator_lineage

        base_url, table_uri, landed = getattr(self, "_lineage", (None, None, None))
        return operator_lineage(base_url, table_uri, landed)


def _check_sizes(**sizes: int | None) -> None:
    """Counts that must be positive (max_restarts: not negative); refused when the DAG is parsed."""
    for name, value in sizes.items():
        least = 0 if name == "max_restarts" else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise CDRConfigError(f"{name} must be a whole number of at least {least}, got {value!r}")
    per_page = sizes.get("per_page")
    if per_page is not None and per_page > MAX_PER_PAGE:
        raise CDRConfigError(f"per_page must be at most {MAX_PER_PAGE} (the API's maximum), got {per_page}")
