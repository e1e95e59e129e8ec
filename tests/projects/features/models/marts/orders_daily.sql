{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='ordered_at',
          batch_size='day', begin='2026-01-01', concurrent_batches=true) }}
select order_id, customer_id, amount, ordered_at from {{ ref('stg_orders') }}
