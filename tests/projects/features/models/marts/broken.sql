select customer_id from {{ ref('stg_customers') }}
{% if var('features_break') %} join does_not_exist using (customer_id) {% endif %}
