{{ config(materialized='ephemeral') }}
select order_id, amount as paid from {{ ref('raw_payments') }}
