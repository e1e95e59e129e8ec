{#- A snapshot block rather than a YAML snapshot (those need dbt-core 1.9): the shop runs on every dbt-core
    dbtbus supports. dbt 1.8 requires target_schema; later versions accept it. -#}
{% snapshot orders_snapshot %}
{{ config(target_schema=target.schema, unique_key='id', strategy='check', check_cols='all') }}
select * from {{ ref('orders') }}
{% endsnapshot %}
