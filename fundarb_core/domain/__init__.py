"""The keeper's vocabulary: markets and pairs, plans, orders and their status machine, fills, positions and the
one average-cost P&L rule — plain frozen types shared by strategy, execution, simulation, venues and storage."""

from fundarb_core.domain.client_ids import ClientOrderId, client_id_str, client_order_id
from fundarb_core.domain.markets import Market, Pair
from fundarb_core.domain.orders import (
    FINAL_ORDER_STATUSES,
    UNRESOLVED_ORDER_STATUSES,
    IllegalTransition,
    Order,
    OrderRecord,
    OrderStatus,
    Side,
)
from fundarb_core.domain.plan import PLAN_SCHEMA, Plan
from fundarb_core.domain.positions import (
    LIVE_POSITION_STATUSES,
    Fill,
    LegBook,
    PairPosition,
    PositionStatus,
)
from fundarb_core.domain.venue_state import Balance, BookTop, FundingPayment, VenuePosition

__all__ = [
    "FINAL_ORDER_STATUSES",
    "LIVE_POSITION_STATUSES",
    "PLAN_SCHEMA",
    "UNRESOLVED_ORDER_STATUSES",
    "Balance",
    "BookTop",
    "ClientOrderId",
    "Fill",
    "FundingPayment",
    "IllegalTransition",
    "LegBook",
    "Market",
    "Order",
    "OrderRecord",
    "OrderStatus",
    "Pair",
    "PairPosition",
    "Plan",
    "PositionStatus",
    "Side",
    "VenuePosition",
    "client_id_str",
    "client_order_id",
]
