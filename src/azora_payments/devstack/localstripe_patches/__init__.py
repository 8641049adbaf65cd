"""Monkeypatches that make localstripe answer like real Stripe (gap table: see ``emulator.py``).

One module per gap of the table, each installing its patches and naming the tests of
``tests/devstack/test_emulator.py`` that show the gap (``test_<letter>_…``):

===========================  ====================================================================
module                       gaps
===========================  ====================================================================
``gap_a_disk``               a: no pickle in /tmp
``gap_cdf_payment_intents``  c, d, e, f, i: PaymentIntent parameters, confirm, 3-D Secure, cancel
``gap_cg_refunds``           c, g: refund ``reason``, refusals, failing refunds, refund events
``gap_e_charges``            e, i: declines at charge time and on demand; charge events and lists
``gap_h_disputes``           h: disputes
``gap_i_lists``              i: newest-first lists, the events API, events' version and request
``gap_j_webhooks``           j: ordered, signed-at-delivery, retried webhooks
``gap_l_payment_methods``    l: test ids, payment-method events and lists, 404 bodies
``gap_m_search``             m: PaymentIntent search
===========================  ====================================================================

Gaps b and k (idempotency, faults) are HTTP-level and live in ``emulator.py``. ``_base`` holds
what the patches share. :func:`apply` installs them all, once, and refuses a localstripe other
than the one they were written against: they replace private attributes (``_api_confirm``,
``_trigger_payment``, …) whose meaning an upgrade may change silently.
localstripe has no type hints, so its objects are ``Any`` here on purpose.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from azora_payments.devstack.localstripe_patches import (
    gap_a_disk,
    gap_cdf_payment_intents,
    gap_cg_refunds,
    gap_e_charges,
    gap_h_disputes,
    gap_i_lists,
    gap_j_webhooks,
    gap_l_payment_methods,
    gap_m_search,
)
from azora_payments.devstack.localstripe_patches._base import (
    DECLINE_RULES,
    REQUEST_CONTEXT,
    SETTINGS,
)
from azora_payments.devstack.localstripe_patches.gap_j_webhooks import DISPATCHER, shutdown

__all__ = [
    "DECLINE_RULES",
    "DISPATCHER",
    "LOCALSTRIPE_VERSION",
    "REQUEST_CONTEXT",
    "SETTINGS",
    "UnsupportedLocalstripe",
    "apply",
    "check_localstripe_version",
    "register_routes",
    "shutdown",
]

# The localstripe these patches were written against and checked with (pyproject pins it).
LOCALSTRIPE_VERSION = "1.15.10"

_applied = False


class UnsupportedLocalstripe(RuntimeError):
    """The installed localstripe is not the one the patches were written for."""


def check_localstripe_version(installed: str | None = None) -> None:
    """Raise :class:`UnsupportedLocalstripe` unless localstripe is ``LOCALSTRIPE_VERSION``."""
    if installed is None:
        try:
            installed = version("localstripe")
        except PackageNotFoundError:
            installed = "none"
    if installed != LOCALSTRIPE_VERSION:
        raise UnsupportedLocalstripe(
            f"localstripe {installed} is installed, but the emulator's patches were written for "
            f"localstripe {LOCALSTRIPE_VERSION}: they replace its private attributes, so check "
            "each gap's tests (tests/devstack/test_emulator.py) against the new version, then "
            "raise LOCALSTRIPE_VERSION in azora_payments/devstack/localstripe_patches"
        )


def apply(*, webhook_delay: float) -> None:
    """Install every patch once (idempotent); ``webhook_delay`` may be changed on each call."""
    global _applied
    check_localstripe_version()
    SETTINGS.webhook_delay = webhook_delay
    if _applied:
        return
    _applied = True
    gap_a_disk.install()
    gap_i_lists.install()
    gap_j_webhooks.install()
    gap_l_payment_methods.install()
    gap_e_charges.install()
    gap_cdf_payment_intents.install()
    gap_cg_refunds.install()
    gap_m_search.install()
    _rebind_extra_apis()


def register_routes(app: web.Application) -> None:
    """Routes localstripe lacks: disputes and a customer's payment methods; declines on
    demand."""
    gap_e_charges.register_routes(app)
    gap_h_disputes.register_routes(app)
    gap_l_payment_methods.register_routes(app)


def _rebind_extra_apis() -> None:
    # localstripe captured its extra routes' handlers (e.g. PaymentIntent._api_confirm) in
    # `extra_apis` at import time; point them at the patched class attributes before
    # localstripe.server turns that list into routes.
    from localstripe import resources as R

    for i, (method, url, func) in enumerate(R.extra_apis):
        owner = getattr(func, "__self__", None)
        if isinstance(owner, type):
            R.extra_apis[i] = (method, url, getattr(owner, func.__name__))
