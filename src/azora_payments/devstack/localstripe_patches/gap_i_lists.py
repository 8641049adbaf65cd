"""Gap i: lists newest first in creation order (not whole seconds), the events API's filters, and
events that carry the SDK's ``api_version`` and their ``request``.

Shown by ``tests/devstack/test_emulator.py``: ``test_i_events_api_version_and_latest_charge``,
``test_i_event_listing_for_reconciliation``, ``test_i_payment_method_events``.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Callable
from typing import Any

import stripe
from localstripe import resources as R
from localstripe import webhooks as W

from azora_payments.devstack.localstripe_patches._base import (
    REQUEST_CONTEXT,
    invalid,
)

_seq = itertools.count()


def _stamp_sequence(original: Callable[..., None]) -> Callable[..., None]:
    # `created` has a one-second resolution: a counter orders objects made in the same second.
    def init(self: Any, id: str | None = None) -> None:
        original(self, id)
        self._azora_seq = next(_seq)

    return init


def _created_matches(created: Any) -> Callable[[Any], bool]:
    if created is None:
        return lambda _obj: True
    if isinstance(created, dict):
        bounds: dict[str, int] = {}
        for op, value in created.items():
            number = R.try_convert_to_int(value)
            if op not in ("gt", "gte", "lt", "lte") or not isinstance(number, int):
                raise invalid(f"Invalid created[{op}]", param="created")
            bounds[op] = number

        def match(obj: Any) -> bool:
            c = obj.created
            return bool(
                c > bounds.get("gt", c - 1)
                and c >= bounds.get("gte", c)
                and c < bounds.get("lt", c + 1)
                and c <= bounds.get("lte", c)
            )

        return match
    exact = R.try_convert_to_int(created)
    if not isinstance(exact, int):
        raise invalid("Invalid integer: created", param="created")
    return lambda obj: bool(obj.created == exact)


def listing(
    url: str,
    object_name: str,
    *,
    where: Callable[[Any], bool] = lambda _obj: True,
    created: Any = None,
    limit: Any = None,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> Any:
    """A Stripe list: newest first, ``starting_after`` pages towards older objects."""
    if ending_before is not None:
        raise invalid("The emulator does not support ending_before", param="ending_before")
    in_window = _created_matches(created)
    li = R.List(url, limit=limit, starting_after=starting_after)
    items = [
        obj
        for key, obj in R.store.items()
        if key.startswith(object_name + ":") and in_window(obj) and where(obj)
    ]
    items.sort(key=lambda obj: getattr(obj, "_azora_seq", -1), reverse=True)
    li._list = items
    return li


Where = Callable[[Any], bool]


def equal_to(*names: str) -> Callable[..., Where]:
    """The filters of a list whose parameters each ask for one value of the attribute they name;
    a parameter not given matches every object."""

    def where_from_params(**params: Any) -> Where:
        unknown = sorted(params.keys() - set(names))
        if unknown:
            # What the list's signature said before it was shared: an unknown parameter fails.
            raise TypeError(f"list got an unexpected keyword argument {unknown[0]!r}")
        return lambda obj: all(
            value is None or getattr(obj, name) == value for name, value in params.items()
        )

    return where_from_params


def filtered_list(object_name: str, where_from_params: Callable[..., Where]) -> Any:
    """A resource's ``_api_list_all`` (a classmethod): :func:`listing` of ``object_name`` with the
    paging parameters every list takes, and its own filters read by ``where_from_params``."""

    def list_all(
        cls: Any,
        /,
        url: str,
        created: Any = None,
        limit: Any = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        **params: Any,
    ) -> Any:
        return listing(
            url,
            object_name,
            where=where_from_params(**params),
            created=created,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )

    return classmethod(list_all)


def _events_where(
    type: str | None = None,
    types: list[str] | None = None,
    delivery_success: Any = None,
) -> Where:
    patterns = ([type] if type else []) + list(types or [])
    return lambda event: not patterns or any(fnmatch.fnmatchcase(event.type, p) for p in patterns)


def newest_first(cls: Any) -> None:
    original = cls._api_list_all

    def list_all(klass: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        li = original(url, *args, **kwargs)
        li._list.sort(key=lambda obj: getattr(obj, "_azora_seq", -1), reverse=True)
        return li

    cls._api_list_all = classmethod(list_all)


def _event_init(original: Callable[..., None]) -> Callable[..., None]:
    def init(self: Any, type: str, data: Any) -> None:
        original(self, type, data)
        self.api_version = stripe.api_version
        self.pending_webhooks = sum(
            1 for hook in W._webhooks.values() if hook.events is None or type in hook.events
        )
        request_id, idempotency_key = REQUEST_CONTEXT.get()
        self.request = {"id": request_id, "idempotency_key": idempotency_key}

    return init


def install() -> None:
    R.StripeObject.__init__ = _stamp_sequence(R.StripeObject.__init__)
    R.Event.__init__ = _event_init(R.Event.__init__)
    R.Event._api_list_all = filtered_list("event", _events_where)
