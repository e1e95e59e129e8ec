-- Opt-in runtime failure: `dbt build --vars '{shop_break: true}'`
{% if var('shop_break', false) %}
select * from this_table_does_not_exist
{% else %}
select 1 as id
{% endif %}
