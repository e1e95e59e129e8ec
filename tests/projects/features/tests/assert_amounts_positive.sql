select * from {{ ref('orders_paid') }} where amount <= 0
