-- grandchild of customers_summary: skipped too
select * from {{ ref('customer_ranking') }} where value_rank <= 3
