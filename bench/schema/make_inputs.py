#!/usr/bin/env python3
"""Writes the inputs of the schema micro-benchmark (see README.md):

  pydantic.json  a large model the way Pydantic v2 writes it ($defs, $ref,
                 Optional[...] as anyOf with null, enums, nested lists);
  subset.json    the same constraints in PROTOCOL section 4's keyword
                 subset ($refs inlined, Optional[X] as "type": [X, "null"]),
                 which the old validator could compile;
  instance.json  one valid order with 200 line items.
"""
import copy
import json
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "."

address = {"title": "Address", "type": "object", "required": ["street", "city", "country"],
           "properties": {"street": {"title": "Street", "type": "string", "minLength": 1, "maxLength": 200},
                          "city": {"title": "City", "type": "string", "minLength": 1, "maxLength": 100},
                          "zip": {"anyOf": [{"type": "string", "pattern": "^[0-9]{5}$"}, {"type": "null"}],
                                  "default": None, "title": "Zip"},
                          "country": {"$ref": "#/$defs/Country"}}}
country = {"title": "Country", "type": "string", "enum": ["NO", "SE", "DK", "FI", "IS", "DE", "FR", "NL"]}
money = {"title": "Money", "type": "object", "required": ["amount", "currency"],
         "properties": {"amount": {"title": "Amount", "type": "number", "minimum": 0, "multipleOf": 0.01},
                        "currency": {"title": "Currency", "type": "string", "enum": ["NOK", "SEK", "EUR", "USD"]}}}
item = {"title": "Item", "type": "object", "required": ["sku", "qty", "price"],
        "properties": {"sku": {"title": "Sku", "type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
                       "qty": {"title": "Qty", "type": "integer", "exclusiveMinimum": 0, "maximum": 1000},
                       "price": {"$ref": "#/$defs/Money"},
                       "discount": {"anyOf": [{"$ref": "#/$defs/Money"}, {"type": "null"}], "default": None},
                       "tags": {"title": "Tags", "type": "array", "items": {"type": "string", "maxLength": 20},
                                "default": []},
                       "note": {"anyOf": [{"type": "string", "maxLength": 500}, {"type": "null"}], "default": None}}}
status = {"title": "Status", "type": "string", "enum": ["draft", "paid", "shipped", "cancelled"]}
order = {"title": "Order", "type": "object", "additionalProperties": False,
         "required": ["customer", "email", "items", "billing"],
         "properties": {"customer": {"title": "Customer", "type": "string", "minLength": 1, "maxLength": 80},
                        "email": {"title": "Email", "type": "string", "maxLength": 254},
                        "status": {"$ref": "#/$defs/Status", "default": "draft"},
                        "billing": {"$ref": "#/$defs/Address"},
                        "shipping": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None},
                        "items": {"title": "Items", "type": "array", "minItems": 1, "maxItems": 1000,
                                  "items": {"$ref": "#/$defs/Item"}},
                        "total": {"$ref": "#/$defs/Money"},
                        "coupon": {"anyOf": [{"type": "string", "pattern": "^[A-Z0-9]{8}$"}, {"type": "null"}],
                                   "default": None},
                        "gift": {"title": "Gift", "type": "boolean", "default": False}}}
defs = {"Address": address, "Country": country, "Money": money, "Item": item, "Status": status}
pydantic = dict(order, **{"$defs": defs})


def inline(s):
    """The subset form: $refs inlined, anyOf[X, null] folded into X's type."""
    if isinstance(s, dict):
        if "$ref" in s:
            target = copy.deepcopy(defs[s["$ref"].split("/")[-1]])
            rest = {k: v for k, v in s.items() if k != "$ref"}
            target.update(rest)
            return inline(target)
        if "anyOf" in s and len(s["anyOf"]) == 2 and s["anyOf"][1] == {"type": "null"}:
            branch = inline(s["anyOf"][0])
            branch["type"] = [branch["type"], "null"]
            if "enum" in branch:
                branch["enum"] = branch["enum"] + [None]
            for k, v in s.items():
                if k != "anyOf":
                    branch[k] = v
            return branch
        return {k: inline(v) if k in ("properties", "items", "additionalProperties") else v for k, v in s.items()} \
            if "properties" not in s else dict(
                {k: v for k, v in s.items() if k != "properties"},
                properties={n: inline(v) for n, v in s["properties"].items()},
                **({"items": inline(s["items"])} if "items" in s else {}))
    return s


subset = inline(order)
addr = {"street": "1 Main St", "city": "Oslo", "zip": "01234", "country": "NO"}
instance = {"customer": "Ada Lovelace", "email": "ada@example.com", "status": "paid", "billing": addr,
            "shipping": dict(addr, zip=None), "total": {"amount": 1234.5, "currency": "NOK"}, "coupon": None,
            "items": [{"sku": "AB-%04d" % i, "qty": 1 + i % 7, "price": {"amount": 10.25 + i, "currency": "NOK"},
                       "discount": None if i % 3 else {"amount": 1.5, "currency": "NOK"},
                       "tags": ["t%d" % (i % 5)], "note": None if i % 2 else "fragile"} for i in range(200)]}
for name, doc in (("pydantic.json", pydantic), ("subset.json", subset), ("instance.json", instance)):
    with open("%s/%s" % (out, name), "w") as f:
        json.dump(doc, f, indent=1)
