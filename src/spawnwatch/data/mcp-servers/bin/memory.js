#!/usr/bin/env node
"use strict";
require("../server.js").serve("memory");
