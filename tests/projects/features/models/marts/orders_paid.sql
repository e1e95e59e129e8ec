select o.order_id, o.customer_id, o.amount, p.paid, o.ordered_at
from {{ ref('stg_orders') }} o join {{ ref('stg_payments') }} p using (order_id)
