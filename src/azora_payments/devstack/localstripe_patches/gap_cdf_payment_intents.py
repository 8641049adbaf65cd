"""Gaps c, d, e, f and i for PaymentIntents: Stripe's create and confirm parameters, confirm with a
payment method (also after a decline), card errors carrying the intent, 3-D Secure and cancel
with their events, ``latest_charge`` as an id, lists by customer.

Shown by ``tests/devstack/test_emulator.py``: ``test_c_payment_intent_takes_real_stripe_params``,
``test_c_metadata_keys_are_limited_as_stripe_limits_them``, ``test_d_confirm_with_payment_method``,
``test_e_decline_at_charge_time_looks_like_stripe``, ``test_f_three_d_secure``, ``test_f_cancel``,
``test_i_events_api_version_and_latest_charge``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from localstripe import resources as R

from azora_payments.devstack.localstripe_patches._base import (
    StripeError,
    emit,
    invalid,
)
from azora_payments.devstack.localstripe_patches.gap_e_charges import card_error
from azora_payments.devstack.localstripe_patches.gap_i_lists import equal_to, filtered_list

PI_STORED_PARAMS = (
    "description",
    "receipt_email",
    "setup_future_usage",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "shipping",
)
# Accepted as Stripe does, but not part of the PaymentIntent object.
PI_ACCEPTED_PARAMS = ("error_on_requires_action", "use_stripe_sdk", "mandate_data", "radar_options")


def resolve_payment_method(payment_method: Any, param: str = "payment_method") -> Any:
    """Turn ``pm_card_visa`` & co. into a concrete ``pm_…`` like Stripe does."""
    if payment_method is None or payment_method == "":
        return None
    if not isinstance(payment_method, str) or not payment_method.startswith(
        ("pm_", "card_", "src_")
    ):
        raise invalid(f"Invalid {param}", param=param)
    return R.PaymentMethod._api_retrieve(payment_method).id


STRIPE_METADATA_KEYS = 50


def _validate_pi_params(params: dict[str, Any]) -> None:
    sfu = params.get("setup_future_usage")
    if sfu not in (None, "", "on_session", "off_session"):
        raise invalid(f"Invalid setup_future_usage: {sfu}", param="setup_future_usage")
    email = params.get("receipt_email")
    if email not in (None, "") and (not isinstance(email, str) or "@" not in email):
        raise invalid(f"Invalid email address: {email}", param="receipt_email")
    apm = params.get("automatic_payment_methods")
    if apm is not None:
        if not isinstance(apm, dict) or "enabled" not in apm:
            raise invalid("Missing required param: automatic_payment_methods[enabled].")
        if apm.get("allow_redirects", "always") not in ("always", "never"):
            raise invalid("Invalid automatic_payment_methods[allow_redirects]")
    for key in ("description", "return_url"):
        if params.get(key) is not None and not isinstance(params[key], str):
            raise invalid(f"Invalid {key}", param=key)
    metadata = params.get("metadata")
    if isinstance(metadata, dict) and len(metadata) > STRIPE_METADATA_KEYS:
        raise invalid(
            f"Invalid metadata: metadata cannot have more than {STRIPE_METADATA_KEYS} keys",
            param="metadata",
        )


def _store_pi_params(pi: Any, params: dict[str, Any]) -> None:
    for key in PI_STORED_PARAMS:
        if key in params:
            setattr(pi, key, params[key] or None)
    if params.get("return_url"):
        pi._azora_return_url = params["return_url"]


def _pi_init(original: Callable[..., None]) -> Callable[..., None]:
    def init(
        self: Any,
        *args: Any,
        payment_method: Any = None,
        payment_method_types: Any = None,
        automatic_payment_methods: Any = None,
        return_url: Any = None,
        confirmation_method: str = "automatic",
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in (*PI_STORED_PARAMS, *PI_ACCEPTED_PARAMS) if k in kwargs}
        extra["automatic_payment_methods"] = automatic_payment_methods
        extra["return_url"] = return_url
        _validate_pi_params({**extra, "metadata": kwargs.get("metadata")})
        payment_method = resolve_payment_method(payment_method)
        original(self, *args, payment_method=payment_method, **kwargs)
        for key in PI_STORED_PARAMS:
            setattr(self, key, None)
        _store_pi_params(self, extra)
        if automatic_payment_methods is not None:
            self.automatic_payment_methods = {
                "enabled": R.try_convert_to_bool(automatic_payment_methods["enabled"]),
                "allow_redirects": automatic_payment_methods.get("allow_redirects", "always"),
            }
        else:
            self.automatic_payment_methods = None
        self.payment_method_types = payment_method_types or ["card"]
        self.confirmation_method = confirmation_method
        self.cancellation_reason = None
        self.canceled_at = None
        self._azora_return_url = return_url
        self._azora_last_error = None
        emit("payment_intent.created", self)

    return init


def _pi_export(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    # Stripe returns `latest_charge` as an id unless `expand[]=latest_charge`; localstripe
    # always embeds the Charge and the long-removed `charges` list.
    def export(self: Any, expand: Any = None) -> dict[str, Any]:
        if not isinstance(expand, list):
            obj = original(self, expand=expand)
            charge_paths: list[str] = []
        else:
            charge_paths = [e for e in expand if str(e).split(".")[0] == "latest_charge"]
            obj = original(self, expand=[e for e in expand if e not in charge_paths])
        obj.pop("charges", None)
        charge = self.latest_charge
        if charge is None:
            obj["latest_charge"] = None
        elif charge_paths:
            nested = [p.split(".", 1)[1] for p in charge_paths if "." in p]
            obj["latest_charge"] = charge._export(expand=nested)
        else:
            obj["latest_charge"] = charge.id
        return obj

    return export


def _pi_last_payment_error(self: Any) -> dict[str, Any] | None:
    error = getattr(self, "_azora_last_error", None)
    return dict(error) if error else None


def _pi_amount_received(self: Any) -> int:
    return int(self.amount) if self.status == "succeeded" else 0


def _pi_amount_capturable(self: Any) -> int:
    return int(self.amount) if self.status == "requires_capture" else 0


def unexpected_state(pi: Any, action: str, allowed: tuple[str, ...]) -> StripeError:
    error = invalid(
        f"You cannot {action} this PaymentIntent because it has a status of {pi.status}. Only a "
        f"PaymentIntent with one of the following statuses may be {action}ed: "
        f"{', '.join(allowed)}.",
        code="payment_intent_unexpected_state",
    )
    error.body["error"]["payment_intent"] = pi._export()
    return error


def _pi_create_charge(self: Any, on_failure_now: Callable[[], None]) -> None:
    if self.status != "requires_confirmation":
        raise unexpected_state(self, "confirm", ("requires_confirmation",))
    charge = R.Charge(
        amount=self.amount,
        currency=self.currency,
        customer=self.customer,
        source=self.payment_method,
        description=self.description,
        metadata=dict(self.metadata),
        capture=(self.capture_method != "manual"),
    )
    charge.payment_intent = self.id
    charge.receipt_email = self.receipt_email
    self.latest_charge = charge
    charge._initialize_charge(self._on_success, on_failure_now, self._report_async_failure)


def _pi_report_failure(self: Any) -> None:
    charge = self.latest_charge
    self._azora_last_error = card_error(charge)
    # Stripe detaches the failed payment method from the intent (it stays in last_payment_error).
    self.payment_method = None
    emit("payment_intent.payment_failed", self)
    if self.invoice:
        R.Invoice._api_retrieve(self.invoice)._on_payment_failure_now()
    raise StripeError(402, {**card_error(charge), "payment_intent": self._export()})


def _pi_report_async_failure(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def report(self: Any) -> None:
        self._azora_last_error = card_error(self.latest_charge)
        original(self)

    return report


def _pi_on_success(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def on_success(self: Any) -> None:
        self._azora_last_error = None
        pm = R.store.get("payment_method:" + (self.payment_method or ""))
        if self.setup_future_usage and self.customer and pm is not None and pm.customer is None:
            pm.customer = self.customer
            emit("payment_method.attached", pm)
        original(self)

    return on_success


def _pi_confirm(original: Callable[..., None]) -> Callable[..., None]:
    def confirm(self: Any, on_failure_now: Callable[[], None]) -> None:
        if not self.payment_method:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "Update the PaymentIntent with a payment method and then confirm it again.",
                code="payment_intent_unexpected_state",
            )
        original(self, on_failure_now)
        if self.next_action is None:
            return
        return_url = getattr(self, "_azora_return_url", None)
        if return_url:
            self.next_action = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": f"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={self.id}",
                    "return_url": return_url,
                },
            }
        emit("payment_intent.requires_action", self)

    return confirm


def _pi_api_confirm(
    cls: Any,
    /,
    id: str,
    payment_method: Any = None,
    return_url: Any = None,
    off_session: Any = None,
    capture_method: Any = None,
    payment_method_options: Any = None,
    **kwargs: Any,
) -> Any:
    extra = {k: kwargs.pop(k) for k in (*PI_STORED_PARAMS, *PI_ACCEPTED_PARAMS) if k in kwargs}
    if kwargs:
        raise invalid("Received unknown parameter: " + ", ".join(kwargs))
    extra["return_url"] = return_url
    _validate_pi_params(extra)
    pi = cls._api_retrieve(id)
    allowed = ("requires_payment_method", "requires_confirmation", "requires_action")
    if pi.status not in allowed:
        raise unexpected_state(pi, "confirm", allowed)
    new_pm = resolve_payment_method(payment_method)
    if new_pm is not None:
        pi.payment_method = new_pm
        pi.latest_charge = None  # the failed attempt stays in the store, not on the intent
        pi.next_action = None
        pi._authentication_failed = False
    elif pi.status == "requires_action":
        raise unexpected_state(pi, "confirm", allowed[:2])
    if capture_method in ("automatic", "automatic_async", "manual"):
        pi.capture_method = capture_method
    _store_pi_params(pi, extra)
    pi._confirm(on_failure_now=pi._report_failure)
    return pi


def _pi_api_cancel(original: Callable[..., Any]) -> Any:
    allowed = (
        "requires_payment_method",
        "requires_capture",
        "requires_confirmation",
        "requires_action",
    )

    def cancel(
        cls: Any,
        /,
        id: str,
        cancellation_reason: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if cancellation_reason not in (
            None,
            "duplicate",
            "fraudulent",
            "requested_by_customer",
            "abandoned",
        ):
            raise invalid("Invalid cancellation_reason", param="cancellation_reason")
        pi = cls._api_retrieve(id)
        if pi.status not in allowed:
            raise unexpected_state(pi, "cancel", allowed)
        original(id, **kwargs)
        pi.cancellation_reason = cancellation_reason
        pi.canceled_at = int(time.time())
        emit("payment_intent.canceled", pi)
        return pi

    return classmethod(cancel)


def _pi_api_authenticate(original: Callable[..., Any]) -> Any:
    def authenticate(cls: Any, /, id: str, **kwargs: Any) -> Any:
        pi = cls._api_retrieve(id)
        pm = R.store.get("payment_method:" + (pi.payment_method or ""))
        pi = original(id, **kwargs)
        if pi._authentication_failed:
            pi._azora_last_error = {
                "type": "invalid_request_error",
                "code": "payment_intent_authentication_failure",
                "message": "The provided PaymentMethod has failed authentication. You can provide "
                "payment_method_data or a new PaymentMethod to attempt to fulfill this "
                "PaymentIntent again.",
                "payment_method": pm._export() if pm is not None else None,
            }
            emit("payment_intent.payment_failed", pi)
        return pi

    return classmethod(authenticate)


def install() -> None:
    pi = R.PaymentIntent
    pi.__init__ = _pi_init(pi.__init__)
    pi._export = _pi_export(pi._export)
    pi.last_payment_error = property(_pi_last_payment_error)
    pi.amount_received = property(_pi_amount_received)
    pi.amount_capturable = property(_pi_amount_capturable)
    pi._create_charge = _pi_create_charge
    pi._report_failure = _pi_report_failure
    pi._report_async_failure = _pi_report_async_failure(pi._report_async_failure)
    pi._on_success = _pi_on_success(pi._on_success)
    pi._confirm = _pi_confirm(pi._confirm)
    pi._api_confirm = classmethod(_pi_api_confirm)
    pi._api_cancel = _pi_api_cancel(pi._api_cancel)
    pi._api_authenticate = _pi_api_authenticate(pi._api_authenticate)
    pi._api_list_all = filtered_list("payment_intent", equal_to("customer"))
