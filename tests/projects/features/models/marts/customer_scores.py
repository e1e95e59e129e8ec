def model(dbt, session):
    dbt.config(materialized="table")
    customers = dbt.ref("stg_customers")
    return customers.project("customer_id, length(name) as score")
