"""The budget route's dependencies: the ledger and the AWS plan reader the lifespan built."""

from typing import Annotated

from fastapi import Depends, Request

from app.budget.spending import AccountPlan, Spending


def get_spending(request: Request) -> Spending:
    return request.app.state.spending


def get_account_plan(request: Request) -> AccountPlan:
    return request.app.state.account_plan


SpendingDep = Annotated[Spending, Depends(get_spending)]
AccountPlanDep = Annotated[AccountPlan, Depends(get_account_plan)]
