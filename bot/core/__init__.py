"""The Discord-free core: `service.PersonaService` (the one door) over the feature packages
(ingest, training, generation, personas, conversation) and `storage` (all of the SQL)."""
