"""Retrieval served to people and programs: the models a server embeds queries with, the item
catalogue, and the HTTP application (`ampere serve`)."""
