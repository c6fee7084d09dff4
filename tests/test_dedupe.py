"""uuid keys and the seen-set: exact, also for odd uuids and within one page."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa

from airflow_provider_cdr.api.dedupe import SeenUUIDs, uuid_keys


def test_keys_are_the_same_from_lists_and_arrow_and_across_case() -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    from_list = uuid_keys(ids)
    from_arrow = uuid_keys(pa.array(ids).slice(0))
    assert np.array_equal(from_list, from_arrow)
    assert np.array_equal(uuid_keys([ids[0].upper()]), from_list[:1])
    assert len({tuple(row) for row in from_list.tolist()}) == 50


def test_non_canonical_uuids_get_stable_distinct_keys() -> None:
    odd = ["abc", "", "not-a-uuid-at-all-but-36-characters", "x" * 36, "ü" * 20]
    mixed = [*odd, str(uuid.uuid4())]
    keys = uuid_keys(mixed)
    assert len({tuple(row) for row in keys.tolist()}) == len(mixed)
    assert np.array_equal(uuid_keys(odd), keys[: len(odd)])


def test_36_characters_with_a_non_hex_digit_are_not_canonical() -> None:
    """Whitespace, a non-hex letter or a non-ASCII byte where a digit belongs: hashed, never decoded
    (bytes.fromhex skips whitespace, so a shortened result must not pass for 16 bytes)."""
    good = "8d1371d2-e166-4677-b158-b1782ddd412d"
    odd = [
        good[:34] + " d",
        good[:34] + "  ",
        good[:34] + "\td",
        good[:35] + "g",
        good[:34] + "\u00e9",
        " " + good[1:],
    ]
    for text in odd:
        keys = uuid_keys([good, text, good])
        assert np.array_equal(keys[0], keys[2])
        assert not np.array_equal(keys[1], keys[0])
        assert np.array_equal(keys[1], uuid_keys([text])[0])  # the same key alone as among canonical ones
        assert np.array_equal(keys[0], uuid_keys([good])[0])


def test_seen_set_marks_repeats_within_and_across_pages() -> None:
    """600,000 keys: a full run, a run being filled, and recent pages, all searched."""
    seen = SeenUUIDs()
    ids = [str(uuid.uuid4()) for _ in range(600_000)]
    total = 0
    for start in range(0, len(ids), 10_000):
        page = ids[start : start + 10_000] + ids[max(start - 5, 0) : start]  # 5 repeats from the last page
        fresh = seen.add_new(uuid_keys(page))
        assert fresh[:10_000].all() and not fresh[10_000:].any()
        total += int(fresh.sum())
    assert total == len(ids) == len(seen)
    assert seen._full and len(seen._filling) and seen._recent, "every kind of run holds keys"
    again = seen.add_new(uuid_keys([ids[0], ids[123_456], ids[400_000], ids[599_999], ids[0], "new"]))
    assert again.tolist() == [False, False, False, False, False, True]


def test_keys_sharing_a_high_half_are_told_apart() -> None:
    seen = SeenUUIDs()
    first = "12345678-1234-1234-0000-000000000001"
    second = "12345678-1234-1234-0000-000000000002"
    assert seen.add_new(uuid_keys([first, second, first])).tolist() == [True, True, False]
    assert seen.add_new(uuid_keys([second, "12345678-1234-1234-0000-000000000003"])).tolist() == [False, True]


def test_merge_keeps_the_high_half_sorted_and_every_key() -> None:
    from airflow_provider_cdr.api.dedupe import merge_sorted, sort_keys

    rng = np.random.default_rng(7)
    big = sort_keys(rng.integers(0, 2**63, size=(1000, 2), dtype=np.uint64))
    small = sort_keys(np.vstack([rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64), big[:3]]))
    merged = merge_sorted(big, small)
    assert np.all(np.diff(merged[:, 0].astype(np.float64)) >= 0)
    assert sorted(map(tuple, merged.tolist())) == sorted(map(tuple, np.vstack([big, small]).tolist()))


def test_keys_of_a_sliced_array_and_of_mixed_lengths_match_the_whole() -> None:
    """The back-to-back view and the gather give the same keys, whatever the array's offset."""
    ids = [str(uuid.uuid4()) for _ in range(50)]
    whole = uuid_keys(pa.array(ids))
    assert np.array_equal(uuid_keys(pa.array(ids).slice(7, 20)), whole[7:27])
    mixed = [*ids[:5], "not-a-uuid", *ids[5:10]]
    assert np.array_equal(np.delete(uuid_keys(mixed), 5, axis=0), whole[:10])
