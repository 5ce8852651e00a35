"""What GET /budget answers."""

from pydantic import BaseModel, Field


class BudgetInstance(BaseModel):
    id: str
    name: str | None
    state: str
    spent_usd: float
    projected_usd: float
    stop_at: str | None


class BudgetLaunch(BaseModel):
    request_id: str
    since: str
    projected_usd: float


class BudgetPeriod(BaseModel):
    period_start: str
    committed_usd: float


class Budget(BaseModel):
    """Spend this period against BUDGET_USD (computed from the recorded state history and PRICES_FILE)."""

    budget_usd: float
    period_start: str
    period_end: str
    spent_usd: float
    committed_usd: float = Field(description="Spent plus what every instance will cost until it stops or the period "
                                             "ends")
    remaining_usd: float
    instances: list[BudgetInstance]
    unpriced: list[str] = Field([], description="Instances whose type has no price here: their compute is not counted")
    unresolved_launches: list[BudgetLaunch] = Field(
        [], description="Creates whose outcome is not known yet (the AWS CLI timed out): each holds what it was "
                        "admitted for, in committed_usd, until it is found launched or proven lost")
    later_periods: list[BudgetPeriod] = Field(
        [], description="What runs reaching past this month (a stop_at in a later month) already commit to each "
                        "later month; each is checked against that month's BUDGET_USD")
    enforcement: str = Field("stop", description="BUDGET_ENFORCEMENT: what the guard does to running instances when "
                                                 "committed spend passes the budget (at a month's start, after an "
                                                 "adoption, a price change): stop the newest runs, or only notify")
    aws_plan: dict | None = Field(None, description="From `aws freetier get-account-plan-state` (real AWS only)")
    aws_plan_note: str | None = None
