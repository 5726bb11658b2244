// Loaded into Azurite with `node --require` (NODE_OPTIONS) by azbai: lets a running emulator serve storage
// accounts added after it started, so adding an account never restarts an emulator that jobs are using.
//
// Azurite reads its accounts from $AZURITE_ACCOUNTS at start and every minute. This hook re-reads the accounts
// file azbai keeps (AZBAI_AZURITE_ACCOUNTS_FILE, "name:key;..." with Azurite's public development key only)
// whenever a request names an account Azurite does not know yet.
"use strict";
const fs = require("fs");
const file = process.env.AZBAI_AZURITE_ACCOUNTS_FILE;
const module_path = process.env.AZBAI_AZURITE_ACCOUNT_STORE;
if (file && module_path) {
  const Store = require(module_path).default;
  const original = Store.prototype.getAccount;
  Store.prototype.getAccount = function (name) {
    let found = original.call(this, name);
    if (found === undefined) {
      try {
        process.env.AZURITE_ACCOUNTS = fs.readFileSync(file, "utf8").trim();
        this.refresh();
      } catch (err) {
        // keep the accounts Azurite already has
      }
      found = original.call(this, name);
    }
    return found;
  };
}
