//! The geofence index: resolves an alert's area to the people it must reach.
