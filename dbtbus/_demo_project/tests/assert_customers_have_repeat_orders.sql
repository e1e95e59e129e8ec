-- Singular test that FAILS (severity error): customers 2, 4 and 5 have a single order.
-- In `dbt build` the failure skips customer_ranking (child) and top_customers (grandchild).
select customer_id, number_of_orders
from {{ ref('customers_summary') }}
where number_of_orders < 2
