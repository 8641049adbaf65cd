"""The operators' work lists and their actions: disputes, parked events (replay), dead jobs
(retry), failed notification deliveries (re-deliver), refund approvals; a reconciliation pass;
and the overview."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from azora_payments.api.deps import ServicesDep
from azora_payments.console import reads
from azora_payments.console.charts import hourly_bars
from azora_payments.console.web import (
    ConsolePageError,
    ConsoleRoute,
    Posted,
    SignedIn,
    page,
    see_other,
)
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, operations, reconcile
from azora_payments.domain.console_sessions import ConsoleOperator

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

NOTICES = {
    "replayed": "The event was queued to be applied again.",
    "retried": "The job is back in the queue, its attempts reset.",
    "redelivery": "Another delivery of the notification was queued.",
    "approval_rejected": "The refund request was rejected.",
    "nothing": "Nothing to do: it was already handled.",
}


def _work_list(
    request: Request, operator: ConsoleOperator, template: str, rows: object
) -> Response:
    """A work list's page, with the notice of the action that led back to it."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return page(request, template, operator=operator, rows=rows, notice=notice)


@router.get("")
async def overview(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    data = await reads.overview(db=services.db, now=utcnow())
    return page(request, "overview.html", operator=operator, o=data, chart=hourly_bars(data.hours))


@router.get("/disputes")
async def disputes(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    cursor = request.query_params.get("cursor") or None
    found = await reads.disputes(db=services.db, cursor=cursor)
    return page(request, "disputes.html", operator=operator, found=found)


@router.get("/events")
async def parked_events(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    rows = await reads.parked_events(db=services.db)
    return _work_list(request, operator, "events.html", rows)


@router.post("/events/{event_id}/replay")
async def replay_event(event_id: str, post: Posted) -> Response:
    result = await operations.replay_events(
        db=post.services.db, event_ids=[event_id[:255]], actor=post.actor
    )
    if result.missing:
        raise ConsolePageError("There is no such event.", title="Not found")
    return see_other("/console/events?notice=replayed")


@router.get("/jobs")
async def dead_jobs(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    rows = await reads.dead_jobs(db=services.db)
    return _work_list(request, operator, "jobs.html", rows)


@router.post("/jobs/{job_id}/retry")
async def retry_job(job_id: int, post: Posted) -> Response:
    retried = await operations.retry_dead_jobs(
        db=post.services.db, job_ids=[job_id], actor=post.actor
    )
    return see_other(f"/console/jobs?notice={'retried' if retried else 'nothing'}")


@router.get("/notifications")
async def failed_notifications(
    request: Request, operator: SignedIn, services: ServicesDep
) -> Response:
    rows = await reads.failed_notifications(db=services.db)
    return _work_list(request, operator, "notifications.html", rows)


@router.post("/notifications/{notification_id}/redeliver")
async def redeliver(notification_id: str, post: Posted) -> Response:
    queued = await operations.redeliver_notification(
        db=post.services.db, notification_id=notification_id[:40], actor=post.actor
    )
    return see_other(f"/console/notifications?notice={'redelivery' if queued else 'nothing'}")


@router.get("/approvals")
async def approvals(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    rows = await reads.pending_approvals(db=services.db)
    return _work_list(request, operator, "approvals.html", rows)


@router.post("/reconcile")
async def run_reconcile(post: Posted) -> Response:
    report = await reconcile.reconcile(post.services)
    async with post.services.db.transaction() as session:
        audit.record(
            session,
            actor=post.actor,
            action="reconcile.run",
            details={"changes": len(report.changes), "errors": len(report.errors)},
        )
    return page(post.request, "reconcile.html", operator=post.operator, lines=report.lines())
