"""GET /budget: spend this period against BUDGET_USD (from the database; never calls AWS)."""

import asyncio

from fastapi import APIRouter, Depends

from app.api.deps import CallerDep, StoreDep, require_token
from app.api.errors import error_responses
from app.budget.deps import AccountPlanDep, SpendingDep
from app.budget.schemas import Budget
from app.core.clock import TIME_FORMAT

router = APIRouter(tags=["budget"], dependencies=[Depends(require_token)], responses=error_responses(401))


@router.get("/budget", response_model=Budget)
async def get_budget(spending: SpendingDep, account_plan: AccountPlanDep, store: StoreDep, caller: CallerDep) -> Budget:
    """Spent, committed and remaining this month (UTC), and each instance's share. The budget is the account's:
    a user sees its totals (what their next create is admitted against) and the shares of their own instances."""
    summary = await asyncio.to_thread(spending.summary)
    instances, unpriced = summary.instances, summary.unpriced
    if not caller.is_admin:
        rows = await asyncio.to_thread(store.get_instances, [i["id"] for i in instances] + list(unpriced))
        mine = {i for i, row in rows.items() if caller.may_see(row["owner"])}
        instances, unpriced = [i for i in instances if i["id"] in mine], [i for i in unpriced if i in mine]
    plan, note = account_plan.cached()
    return Budget(
        budget_usd=spending.budget_usd, period_start=summary.period_start.strftime(TIME_FORMAT),
        period_end=summary.period_end.strftime(TIME_FORMAT), spent_usd=round(summary.spent_usd, 4),
        committed_usd=round(summary.committed_usd, 4),
        remaining_usd=round(max(0.0, spending.budget_usd - summary.committed_usd), 4),
        instances=instances, unpriced=unpriced,
        unresolved_launches=[launch for launch in summary.launches if caller.may_see(launch["owner"])],
        later_periods=summary.later, enforcement=spending.enforcement, aws_plan=plan,
        aws_plan_note=note)
