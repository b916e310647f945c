"""The one table of wire names for the POS loyalty interface.

The official XSDs are members-only; these names come from vendor documentation and field
captures. When the real schema disagrees, edit this table, not the reader or the writers.
The reader matches every name case-insensitively and ignores namespaces.
"""

from __future__ import annotations

REQUEST_SUFFIX = "Request"
RESPONSE_SUFFIX = "Response"

# Header fields: internal name -> element name (requests and responses).
HEADER = "RequestHeader"
RESPONSE_HEADER = "ResponseHeader"
HEADER_FIELDS = {
    "interface_version": "POSLoyaltyInterfaceVersion",  # one POS writes PosLoyalty...; same lower
    "vendor_name": "VendorName",
    "vendor_model_version": "VendorModelVersion",
    "pos_sequence_id": "POSSequenceID",
    "loyalty_sequence_id": "LoyaltySequenceID",
    "store_location_id": "StoreLocationID",
}
OFFLINE_FLAG = "LoyaltyOfflineFlag"

# Request body.
LOYALTY_ID = "LoyaltyID"
ENTRY_METHOD_ATTRS = ("entryMethod", "method")
ENTRY_METHOD = "EntryMethod"
TRANSACTION_DATA = "TransactionData"
TRANSACTION_HEADER = "TransactionHeader"
TRANSACTION_HEADER_FIELDS = {
    "register_id": "RegisterID",
    "fuel_position_id": "FuelPositionID",
    "cashier_id": "CashierID",
    "pos_transaction_id": "POSTransactionID",
}
BUSINESS_PERIOD = "BusinessPeriod"
BUSINESS_DATE = "BusinessDate"
PRIMARY_REPORT_PERIOD = "PrimaryReportPeriod"
PERIOD_INTERVAL_ATTR = "interval"
PERIOD_BEGIN = ("BeginDate", "BeginTime")
PERIOD_END = ("EndDate", "EndTime")
EVENT_START = ("EventStartDate", "EventStartTime")
EVENT_END = ("EventEndDate", "EventEndTime")
OUTSIDE_SALES_FLAG = "OutsideSalesFlag"
TRAINING_FLAG = "TrainingModeFlag"
REGISTER_ID = "RegisterID"
POINTS_REDEEMED = "PointsRedeemed"
END_PERIODS = ("FromPeriod", "ToPeriod")  # EndPeriod: each holds a BusinessPeriod
FINAL_TOTAL = "FinalTransTotal"
DETAIL_GROUP = "TransactionDetailGroup"
LINE = "TransactionLine"
LINE_STATUS_ATTR = "status"
LINE_NUMBER = "LineNumber"

# Line kinds: element name -> internal kind.
LINE_KINDS = {
    "ItemLine": "item",
    "MerchandiseCodeLine": "merchandise",
    "FuelLine": "fuel",
    "TenderInfo": "tender",
    "TransactionTax": "tax",
}
ITEM_CODE = "ItemCode"
CODE_FORMAT = "POSCodeFormat"
CODE_FORMAT_ATTRS = ("format",)
CODE = "POSCode"
LINE_FIELDS = {
    "department": "MerchandiseCode",
    "description": "Description",
    "quantity": "SalesQuantity",
    "unit_price": "ActualSalesPrice",
    "regular_price": "RegularSellPrice",
    "amount": "SalesAmount",
    "grade": "FuelGradeID",
    "fuel_position": "FuelPositionID",
    "tender_code": "TenderCode",
    "tender_amount": "TenderAmount",
}
DISCOUNTABLE_ATTR = "discountable"
FUEL_PREPAY_ATTRS = ("fuelPrepayFlag", "fuelPrepay")
PROMOTION = "Promotion"
PROMOTION_AMOUNT = "PromotionAmount"
REWARD_ID = "LoyaltyRewardID"

# Response body.
PROMPT_FOR_LOYALTY = "PromptForLoyaltyFlag"
LOYALTY_ID_VALID = "LoyaltyIDValidFlag"
REWARD_ACTIONS = "RewardActions"
ADD_REWARD = "AddReward"
REMOVE_REWARD = "RemoveReward"
REWARD_FIELDS = {
    "instant": "InstantRewardFlag",
    "target_line": "RewardTargetLineNumber",
    "method": "RewardDiscountMethod",
    "value": "RewardValue",
    "limit": "RewardLimit",
    "receipt_short": "RewardReceiptDescShort",
    "receipt_long": "RewardReceiptDescLong",
}
REWARD_LIMIT_TYPE = "quantity"
CUSTOMER_MESSAGE = "CustomerMessageData"
RECEIPT_DATA = "ReceiptData"
RECEIPT_LINE = "ReceiptLine"

# Receipt text limits (characters) the POS prints without wrapping.
RECEIPT_SHORT_MAX = 8
RECEIPT_LONG_MAX = 24
RECEIPT_LINE_MAX = 40

# Discount methods: host API name -> POS name. per_unit_off has no POS form (see translate.py).
POS_METHODS = {"amount_off": "amountOff", "percent_off": "percentOff", "new_price": "newPrice"}

# Verifone EPS: namespaces and which elements live in which one.
EPS_LOYALTY_NS = "http://www.pcats.org/schema/naxml/loyalty/v01"
EPS_CORE_NS = "http://www.pcats.org/schema/core/v01"
EPS_NAXML_NS = "http://www.naxml.org/POSBO/Vocabulary/2003-10-16"
EPS_NAXML_ELEMENTS = ("VendorName", "VendorModelVersion")
EPS_OVERALL_RESULT_ATTR = "overallResult"
EPS_RESULT = "Result"
EPS_SUCCESS = "Success"
