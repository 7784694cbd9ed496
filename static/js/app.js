// Switchboard's own behaviour; htmx does the rest.
