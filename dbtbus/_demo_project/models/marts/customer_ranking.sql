-- child of customers_summary: skipped in `dbt build` because a test on customers_summary fails
select customer_id, lifetime_value,
       rank() over (order by lifetime_value desc) as value_rank
from {{ ref('customers_summary') }}
