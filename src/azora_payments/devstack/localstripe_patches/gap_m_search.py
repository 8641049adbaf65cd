"""Gap m: ``GET /v1/payment_intents/search``, lagging writes like Stripe's index.

Shown by ``tests/devstack/test_emulator.py``: ``test_m_search_by_metadata_customer_and_status``,
``test_m_search_lags_like_stripes_index``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from localstripe import resources as R

from azora_payments.devstack.localstripe_patches._base import (
    SETTINGS,
    invalid,
)

_SEARCH_CLAUSE = re.compile(r"""^(metadata\['([^']+)'\]|customer|status):'([^']*)'$""")


class SearchResult:
    """A `search_result` page: everything matching on one page (no `next_page`)."""

    def __init__(self, url: str, items: list[Any]) -> None:
        self.url = url
        self.items = items

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return {
            "object": "search_result",
            "url": self.url,
            "has_more": False,
            "next_page": None,
            "data": [item._export(expand=expand) for item in self.items],
        }


def _search_matcher(query: str) -> Callable[[Any], bool]:
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        found = _SEARCH_CLAUSE.match(part.strip())
        if found is None:
            raise invalid(f"Unsupported search query: {part!r}", param="query")
        clauses.append((found.group(1), found.group(2), found.group(3)))

    def match(obj: Any) -> bool:
        for field_name, meta_key, value in clauses:
            if meta_key is not None:
                if (obj.metadata or {}).get(meta_key) != value:
                    return False
            elif str(getattr(obj, field_name, None) or "") != value:
                return False
        return True

    return match


def _pi_search(query: str = "", limit: Any = None, page: Any = None, **kwargs: Any) -> Any:
    """Gap m: `GET /v1/payment_intents/search` with `metadata['k']:'v'`, `customer:'…'` and
    `status:'…'` clauses joined by AND; newest first; intents younger than the search lag are
    not indexed yet, as on Stripe."""
    match = _search_matcher(query)
    newest = time.time() - SETTINGS.search_lag
    items = [
        obj
        for key, obj in R.store.items()
        if key.startswith("payment_intent:") and obj.created <= newest and match(obj)
    ]
    items.sort(key=lambda obj: getattr(obj, "_azora_seq", 0), reverse=True)
    count = R.try_convert_to_int(limit) if limit is not None else 10
    if not isinstance(count, int) or not 1 <= count <= 100:
        raise invalid("limit must be between 1 and 100", param="limit")
    return SearchResult("/v1/payment_intents/search", items[:count])


def install() -> None:
    # An extra route, so it is matched before `/v1/payment_intents/{id}`.
    R.extra_apis.append(("GET", "/v1/payment_intents/search", _pi_search))
