"""Gap h: a Dispute resource (card 0259), evidence that wins or loses, its events and routes.

Shown by ``tests/devstack/test_emulator.py``: ``test_h_dispute_won_with_evidence``,
``test_h_dispute_lost``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from localstripe import resources as R
from localstripe.errors import UserError

from azora_payments.devstack.localstripe_patches._base import (
    emit,
    invalid,
)
from azora_payments.devstack.localstripe_patches.gap_i_lists import equal_to, filtered_list

EVIDENCE_FIELDS = (
    "access_activity_log billing_address cancellation_policy cancellation_policy_disclosure "
    "cancellation_rebuttal customer_communication customer_email_address customer_name "
    "customer_purchase_ip customer_signature duplicate_charge_documentation "
    "duplicate_charge_explanation duplicate_charge_id product_description receipt "
    "refund_policy refund_policy_disclosure refund_refusal_explanation service_date "
    "service_documentation shipping_address shipping_carrier shipping_date "
    "shipping_documentation shipping_tracking_number uncategorized_file uncategorized_text"
).split()
OPEN_DISPUTE_STATUSES = ("warning_needs_response", "needs_response", "under_review")


class Dispute(R.StripeObject):  # type: ignore[misc]
    object = "dispute"
    _id_prefix = "dp_"

    def __init__(self, charge: Any) -> None:
        super().__init__()
        card = charge.payment_method_details.get("card", {})
        self.amount = charge.amount
        self.currency = charge.currency
        self.charge = charge.id
        self.payment_intent = charge.payment_intent
        self.reason = "fraudulent"
        self.status = "needs_response"
        self.metadata: dict[str, str] = {}
        self.balance_transactions: list[Any] = []
        self.evidence: dict[str, Any] = dict.fromkeys(EVIDENCE_FIELDS)
        self.evidence["enhanced_evidence"] = {}
        self.evidence_details = {
            "due_by": self.created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        }
        self.is_charge_refundable = False
        self.payment_method_details = {
            "type": "card",
            "card": {
                "brand": card.get("brand", "visa"),
                "case_type": "chargeback",
                "network_reason_code": "10.4",
                "network": card.get("brand", "visa"),
            },
        }
        self.enhanced_eligibility_types: list[str] = []

    @classmethod
    def _api_create(cls, **data: Any) -> Any:
        raise UserError(405, "Method Not Allowed")

    @classmethod
    def _api_delete(cls, id: str) -> Any:
        raise UserError(405, "Method Not Allowed")

    @classmethod
    def _api_update(
        cls,
        id: str,
        evidence: Any = None,
        metadata: Any = None,
        submit: Any = True,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise invalid("Received unknown parameter: " + ", ".join(kwargs))
        dispute = cls._api_retrieve(id)
        if evidence is not None and (
            not isinstance(evidence, dict) or set(evidence) - set(EVIDENCE_FIELDS)
        ):
            raise invalid("Invalid evidence", param="evidence")
        if dispute.status not in OPEN_DISPUTE_STATUSES:
            raise invalid(f"This dispute is already closed (status {dispute.status}).")
        if isinstance(metadata, dict):
            dispute.metadata.update(metadata)
        if evidence:
            dispute.evidence.update(evidence)
            dispute.evidence_details["has_evidence"] = True
        if R.try_convert_to_bool(submit) is False:
            emit("charge.dispute.updated", dispute)
            return dispute
        dispute.evidence_details["submission_count"] += 1
        dispute.status = "under_review"
        emit("charge.dispute.updated", dispute)
        # Stripe's documented magic evidence strings decide the outcome in test mode.
        text = dispute.evidence.get("uncategorized_text")
        if text == "winning_evidence":
            dispute._close("won")
        elif text == "losing_evidence":
            dispute._close("lost")
        return dispute

    @classmethod
    def _api_close(cls, id: str, **kwargs: Any) -> Any:
        dispute = cls._api_retrieve(id)
        if dispute.status not in OPEN_DISPUTE_STATUSES:
            raise invalid(f"This dispute is already closed (status {dispute.status}).")
        dispute._close("lost")
        return dispute

    _api_list_all = filtered_list("dispute", equal_to("charge", "payment_intent"))

    def _close(self, status: str) -> None:
        self.status = status
        emit("charge.dispute.closed", self)
        if status == "won":
            emit("charge.dispute.funds_reinstated", self)


def open_dispute(charge: Any) -> None:
    charge.disputed = True
    dispute = Dispute(charge)
    emit("charge.dispute.created", dispute)
    emit("charge.dispute.funds_withdrawn", dispute)


def register_routes(app: web.Application) -> None:
    """``/v1/disputes`` routes, which localstripe lacks."""
    from localstripe import server

    for method, url, make in (
        ("GET", "/v1/disputes", server.api_list_all),
        ("GET", "/v1/disputes/{id}", server.api_retrieve),
        ("POST", "/v1/disputes/{id}", server.api_update),
    ):
        app.router.add_route(method, url, make(Dispute, url))
    app.router.add_post(
        "/v1/disputes/{id}/close", server.api_extra(Dispute._api_close, "/v1/disputes/{id}/close")
    )
