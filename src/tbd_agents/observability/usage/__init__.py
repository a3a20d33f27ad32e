"""The usage ledger, the usage API's queries and budgets.

- `records`: what one model call's record holds (`UsageCall`), the query filters, a budget.
- `store`: the `UsageStore` protocol and `usage_store_for(document_store)`;
  `sql` (PostgreSQL) and `mongo` implement it.
- `meter`: the per-run `UsageMeter` the engine calls before (budget check) and after (record)
  every model call.
- `budgets`: budget periods, status and the refusal message.
"""
