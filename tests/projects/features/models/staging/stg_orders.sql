{{ config(event_time='ordered_at') }}
select id as order_id, customer_id, amount, cast(ordered_at as timestamp) as ordered_at from {{ ref('raw_orders') }}
