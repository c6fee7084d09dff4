"""A calendar day in the account's time zone: its query window and the check of what came back."""
