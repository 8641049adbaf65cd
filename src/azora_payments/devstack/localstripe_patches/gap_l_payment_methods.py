"""Gap l: more ``pm_card_*`` test ids with the right brand, payment-method events and lists, a
customer's payment methods, ``invoice_settings`` merged, Stripe's 404 bodies.

Shown by ``tests/devstack/test_emulator.py``: ``test_l_customer_payment_methods``,
``test_l_sync_sdk_calls``, ``test_i_payment_method_events``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from localstripe import resources as R
from localstripe.errors import UserError

from azora_payments.devstack.localstripe_patches._base import (
    DECLINES,
    TEST_PAYMENT_METHODS,
    StripeError,
    brand_of,
    emit,
    invalid,
    take_decline_rule,
)
from azora_payments.devstack.localstripe_patches.gap_i_lists import listing, newest_first


def _retrieve_not_found_like_stripe(original: Callable[..., Any]) -> Any:
    def retrieve(cls: Any, /, id: str) -> Any:
        try:
            return original.__func__(cls, id)  # type: ignore[attr-defined]
        except UserError as e:
            if e.code != 404 or isinstance(e, StripeError):
                raise
            raise StripeError(
                404,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "id",
                    "message": f"No such {cls.object}: '{id}'",
                },
            ) from None

    return classmethod(retrieve)


def _decorate_card(pm: Any) -> None:
    number = pm._card_number
    brand = brand_of(number)
    pm.card.update(
        brand=brand,
        display_brand=brand,
        country="US",
        last4=number[-4:],
        fingerprint=R.fingerprint(number),
        checks={
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        },
        networks={"available": [brand], "preferred": None},
        wallet=None,
    )


def _pm_init(original: Callable[..., None]) -> Callable[..., None]:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.type == "card":
            _decorate_card(self)

    return init


def _pm_canonical_test_article(cls: Any, /, id: str) -> Any:
    number = TEST_PAYMENT_METHODS.get(id)
    if number is None:
        return None
    # localstripe only takes 16-digit numbers; Amex has 15.
    placeholder = number if len(number) == 16 else "4242424242424242"
    card = {"number": placeholder, "exp_month": "12", "exp_year": "2034", "cvc": "123"}
    pm = R.PaymentMethod(type="card", card=card)
    pm._card_number = number
    _decorate_card(pm)
    return pm


def _pm_charging_is_declined(original: Callable[[Any], bool]) -> Callable[[Any], bool]:
    # Asked once per charge, as the charge is made: a decline on demand is taken here and left
    # on the payment method for the charge's failure to read.
    def declined(self: Any) -> bool:
        number = getattr(self, "_card_number", None)
        if self.type == "card":
            rule = take_decline_rule(number)
            if rule is not None:
                self._azora_decline = (rule.code, rule.decline_code, rule.message)
                return True
        return number in DECLINES or original(self)

    return declined


def _pm_attaching_is_declined(self: Any) -> bool:
    # Real Stripe attaches the decline test cards and declines them when charged; only an
    # invalid number is refused up front.
    return getattr(self, "_card_number", None) == "4242424242424241"


def _pm_attach(original: Callable[..., Any]) -> Any:
    def attach(cls: Any, /, id: str, **kwargs: Any) -> Any:
        pm = original(id, **kwargs)
        emit("payment_method.attached", pm)
        return pm

    return classmethod(attach)


def _pm_detach(original: Callable[..., Any]) -> Any:
    def detach(cls: Any, /, id: str, **kwargs: Any) -> Any:
        pm = cls._api_retrieve(id)
        customer_id = pm.customer
        if customer_id is None:
            raise invalid(
                "The payment method you provided is not attached to a customer so detachment "
                "is impossible.",
                code="payment_method_unexpected_state",
            )
        original(id, **kwargs)
        customer = R.store.get("customer:" + customer_id)
        if customer is not None and customer.invoice_settings.get("default_payment_method") == id:
            customer.invoice_settings["default_payment_method"] = None
        emit("payment_method.detached", pm)
        return pm

    return classmethod(detach)


def _pm_update(original: Callable[..., Any]) -> Any:
    def update(cls: Any, /, id: str, **data: Any) -> Any:
        pm = original(id, **data)
        emit("payment_method.updated", pm)
        return pm

    return classmethod(update)


def _pm_list(
    cls: Any,
    /,
    url: str,
    customer: str | None = None,
    type: str | None = None,
    limit: Any = None,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> Any:
    if customer is not None:
        R.Customer._api_retrieve(customer)
    if type not in (None, "card", "sepa_debit"):
        raise invalid(f"Invalid type: {type}", param="type")
    return listing(
        url,
        "payment_method",
        where=lambda pm: (
            (customer is None or pm.customer == customer) and (type is None or pm.type == type)
        ),
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
    )


def _customer_update(original: Callable[..., Any]) -> Any:
    # localstripe replaces invoice_settings wholesale and accepts any pm id; Stripe merges the
    # dict and insists the default payment method is attached to this customer.
    def update(cls: Any, /, id: str, **data: Any) -> Any:
        customer = cls._api_retrieve(id)
        settings = data.get("invoice_settings")
        if isinstance(settings, dict):
            pm_id = settings.get("default_payment_method")
            if pm_id:
                pm = R.store.get("payment_method:" + pm_id)
                if pm is None or pm.customer != id:
                    raise invalid(
                        f"The customer does not have a payment method with the ID {pm_id}. The "
                        "payment method must be attached to the customer.",
                        code="resource_missing",
                        param="invoice_settings[default_payment_method]",
                    )
            data["invoice_settings"] = {**customer.invoice_settings, **settings}
        return original(id, **data)

    return classmethod(update)


def install() -> None:
    R.StripeObject._api_retrieve = _retrieve_not_found_like_stripe(R.StripeObject._api_retrieve)
    pm = R.PaymentMethod
    pm.__init__ = _pm_init(pm.__init__)
    pm._try_get_canonical_test_article = classmethod(_pm_canonical_test_article)
    pm._charging_is_declined = _pm_charging_is_declined(pm._charging_is_declined)
    pm._attaching_is_declined = _pm_attaching_is_declined
    pm._api_attach = _pm_attach(pm._api_attach)
    pm._api_detach = _pm_detach(pm._api_detach)
    pm._api_update = _pm_update(pm._api_update)
    pm._api_list_all = classmethod(_pm_list)
    R.Customer._api_update = _customer_update(R.Customer._api_update)
    newest_first(R.Customer)


def register_routes(app: web.Application) -> None:
    """``GET /v1/customers/{id}/payment_methods``, which localstripe lacks."""
    from localstripe import server

    def customer_payment_methods(id: str, **query: Any) -> Any:
        return R.PaymentMethod._api_list_all(f"/v1/customers/{id}/payment_methods", id, **query)

    app.router.add_get(
        "/v1/customers/{id}/payment_methods",
        server.api_extra(customer_payment_methods, "/v1/customers/{id}/payment_methods"),
    )
