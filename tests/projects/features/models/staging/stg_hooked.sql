select id, note from {{ source('hooks', 'hook_made') }}
