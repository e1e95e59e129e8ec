select id, doubled + 1 as plus_one from {{ ref('broken_child') }}
