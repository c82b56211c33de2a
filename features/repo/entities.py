"""The one entity of custlens: a customer, keyed by the unified `customer_id` of the lake."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="One real person, after identity resolution across source systems.",
    tags={"owner": "custlens"},
)
