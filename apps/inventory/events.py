"""Contracts the inventory app publishes."""

from pydantic import BaseModel, ConfigDict, Field

from apps.eventbus.contracts import Event


class ReservedLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int = Field(gt=0)


class RejectedLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    requested: int
    available: int = Field(description="stock on hand when the order was refused (0 for an unknown SKU)")
    reason: str = Field(description="out_of_stock or unknown_sku")


class InventoryReserved(Event):
    subject = "inventory.reserved.v1"
    order_id: str
    lines: tuple[ReservedLine, ...] = ()


class InventoryRejected(Event):
    subject = "inventory.rejected.v1"
    order_id: str
    lines: tuple[RejectedLine, ...]


class InventoryReleased(Event):
    subject = "inventory.released.v1"
    order_id: str
    lines: tuple[ReservedLine, ...] = ()
