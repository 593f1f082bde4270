// Loaded before anything else in dist/guanlink.mjs (see scripts/build.mjs).
//
// mqtt-packet calls its `debug` loggers ~46 times per MQTT packet. A disabled debug logger is a
// function with rest parameters, so every call allocates an argument array: ~9% of all the
// platform allocates under load. Unless DEBUG is set (then debug works as usual), loggers that
// are disabled when created are replaced by a function that does nothing.
'use strict';
if (!process.env.DEBUG) {
  const resolved = require.resolve('debug');
  const createDebug = require(resolved);
  const quiet = function quietDebug(namespace) {
    const logger = createDebug(namespace);
    if (logger.enabled) return logger;
    const noop = function () {};
    noop.enabled = false;
    noop.namespace = namespace;
    noop.log = logger.log;
    noop.destroy = function () {};
    noop.extend = function (name, delimiter) {
      return quiet(namespace + (delimiter === undefined ? ':' : delimiter) + name);
    };
    return noop;
  };
  Object.assign(quiet, createDebug);
  require.cache[resolved].exports = quiet;
}
